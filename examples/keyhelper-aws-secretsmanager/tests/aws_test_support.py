"""Constants shared by the example plugin's tests (not named conftest: importable)."""

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}
