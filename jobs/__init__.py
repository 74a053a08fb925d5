"""RQ job entry points: each function takes (ctx, **params) and calls core."""
