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
        ],
    },
)
