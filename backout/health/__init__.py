"""Health: probes, the policy that judges them, watches, the monitor, and what it does about a failed release."""
