"""A local multi-node cluster on one machine (kind and k3d are the model): each node a network
namespace with its own shoald, kept running by a supervisor; see lifecycle.py."""
