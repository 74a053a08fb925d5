"""Labeling: labels and the counts that follow them, the labeling queue with its reservations
that keep labelers apart, and one labeler's keyboard session (a state machine, no Streamlit)."""
