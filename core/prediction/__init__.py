"""Prediction with trained models: top-k for images, batch prediction that writes AI labels
(auto-label), and the label-error finder."""
