"""Service layer of the image classification platform. Never imports Streamlit."""
