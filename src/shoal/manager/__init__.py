"""The manager role: reconciliation loops between desired state (services) and tasks."""
