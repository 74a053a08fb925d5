# The two commands: `make run` (install + app on embedded defaults), `make test` (install + whole suite).
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install install-dev browser run test lint schema worker bench

install:
	$(PIP) install -q -r requirements.txt

install-dev:
	$(PIP) install -q -r requirements-dev.txt

# Debian's Chromium for the browser tests (Playwright drives it; never `playwright install`).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

run: install
	$(PYTHON) -m core migrate
	$(PYTHON) -m streamlit run serve.py --server.headless true

test: install-dev browser
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check .

worker:
	rq worker --url $${REDIS_URL:?set REDIS_URL} --with-scheduler imports training predictions

# Pre-release: regenerate the single initial migration from core/models/.
schema:
	rm -f migrations/versions/0001_initial_schema.py /tmp/cls-schema.db
	DATABASE_URL=sqlite:////tmp/cls-schema.db $(PYTHON) -m alembic revision --autogenerate -m "initial schema" --rev-id 0001 >/dev/null
	DATABASE_URL=sqlite:////tmp/cls-schema.db $(PYTHON) -m alembic upgrade head
	DATABASE_URL=sqlite:////tmp/cls-schema.db $(PYTHON) -m alembic check
	$(PYTHON) -m ruff check --fix -q migrations/versions/ || true

bench:
	@ls bench/*.py
