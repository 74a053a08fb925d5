"""Browser-side pieces of pages that Streamlit's widgets do not provide."""
