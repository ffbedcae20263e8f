"""The RQ worker process: queues, JSON serializer, scheduler, health monitor loop."""
