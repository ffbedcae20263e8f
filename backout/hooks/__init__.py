"""The release-phase hook (`backout release`)."""
