"""web: the receiver and its relay."""
