"""What the pages share (pages/ holds only the routes app.py lists): `shared` (the signed-in user,
role checks, running an action, job progress, storage links), `components` (browser-side pieces), and
the parts of the dataset, import, training and models pages that are not routes themselves."""
