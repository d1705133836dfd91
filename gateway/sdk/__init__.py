"""The partner SDK: a client that signs requests and checks receipts."""
