"""The dispatcher: requests in, runner replicas chosen, outputs back (see ``dispatcher``)."""
