"""Reading a log the server keeps (``ListLogEntries``) from where the reader left off."""

from __future__ import annotations

from clarifai_grpc.grpc.api import service_pb2

from orchard.client.base import BaseClient

LOG_PAGE = 50


class LogReader:
    """New entries of one log on each ``read``: pages past those already read, so a log that
    grows between reads is neither repeated nor skipped."""

    def __init__(self, client: BaseClient, request: service_pb2.ListLogEntriesRequest) -> None:
        self.client = client
        self.request = request
        self.seen = 0

    def read(self) -> list[str]:
        messages: list[str] = []
        while True:
            request = service_pb2.ListLogEntriesRequest()
            request.CopyFrom(self.request)
            request.page, request.per_page = self.seen // LOG_PAGE + 1, LOG_PAGE
            entries = self.client._call("ListLogEntries", request).log_entries
            fresh = entries[self.seen % LOG_PAGE :]
            messages.extend(entry.message for entry in fresh)
            self.seen += len(fresh)
            if len(entries) < LOG_PAGE or not fresh:
                return messages
