"""Service layer of the image classification platform. Never imports Streamlit.

Infrastructure is flat here (config, limits, errors, ids, vocabulary, db, models, storage,
file_links, migrate, users, permissions, stats); each product area is a package whose __init__
says what it owns: library, imports, datasets, labeling, training, prediction, jobs; ml holds the
torch/timm/ONNX code and no database code; cli is `python -m core`."""
