"""A keyhelper backend plugin: the API key from an AWS Secrets Manager secret."""
