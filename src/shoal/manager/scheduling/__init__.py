"""swarmkit's scheduler (manager/scheduler/) as a pure, incremental core: a node set of NodeInfo
kept across passes, a filter pipeline that explains its failures, and tasks scheduled in groups
(one service, one spec version) over a decision tree of spread preferences. No store here:
manager/scheduler.py feeds it the store's changes and writes its decisions."""

from shoal.manager.scheduling.core import Decision, Scheduler
from shoal.manager.scheduling.nodeinfo import NodeInfo, TaskInfo, TaskSpecInfo, describe_spec

__all__ = ["Decision", "NodeInfo", "Scheduler", "TaskInfo", "TaskSpecInfo", "describe_spec"]
