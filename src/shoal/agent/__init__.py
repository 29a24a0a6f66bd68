"""The agent role: runs the tasks the scheduler gave this node, and reports their state."""
