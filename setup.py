"""Beam ships this package to workers with --setup_file, so keep it a plain setup.py."""

from setuptools import find_packages, setup

setup(
    name="fraud-detection",
    version="0.1.0",
    description="Fraud detection for banks on Apache Beam: stream and batch, one pipeline.",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["fraud_detection", "fraud_detection.*"]),
    package_data={"fraud_detection": ["**/*.cql", "**/*.yaml"]},
    install_requires=[
        "apache-beam[gcp]==2.77.*",
        "pyarrow>=17,<26",
        "numpy>=1.26,<3",
        "cassandra-driver==3.*",
        "kafka-python==3.*",
        "crc32c==2.*",  # kafka-python checks every fetched batch in pure Python without it
        "redis==8.*",
        "streamlit==1.*",
        "pyyaml==6.*",
        "tqdm==4.*",
        "scikit-learn==1.*",
        "lightgbm==4.*",
        "argon2-cffi==25.*",
    ],
    extras_require={
        "dev": [
            "pytest==9.*",
            "hypothesis==6.*",
            "ruff==0.17.*",
            "selenium==4.*",
            "confluent-kafka==2.*",  # bench/stream_latency.py's sender only
        ],
    },
    entry_points={"console_scripts": ["fraud-detection=fraud_detection.cli:main"]},
)
