"""Compose files -> StackSpec; see shoal.compose.api for the entry points."""
