"""Task names by workflow step (no Celery import: publishers and tests can use it freely)."""

STEP_TASK_NAMES = {
    "handle_event": "loop.handle_event",
    "create_rma": "rlm.create_rma",
    "transmit_rma": "rlm.transmit_rma",
    "decide": "integration.decide",
    "act_in_loop": "loop.act_in_loop",
    "close_rma": "rlm.close_rma",
    "cancel_rma": "rlm.cancel_rma",
}
