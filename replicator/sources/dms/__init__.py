"""The AWS DMS source: full-load and CDC files (CSV or Parquet) that DMS writes to S3 or a local folder."""
