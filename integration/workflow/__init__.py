"""The workflow: the step table, the steps by stage, the lifecycle and the pure rules and mapping."""
