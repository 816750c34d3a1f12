"""The Azurite launcher against the real, pinned Azurite, through the real Storage SDKs."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from edgehub_emulator.azurite import Azurite, AzuriteError, connection_string


def test_queue_and_blob_round_trip_and_data_survives_a_restart(azurite: Azurite) -> None:
    queue = QueueClient.from_connection_string(azurite.connection_string, "launcher-test")
    queue.create_queue()
    queue.send_message("hello")
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = blobs.get_container_client("launcher-test")
    container.create_container()
    container.upload_blob("a/b.txt", b"kept")

    azurite.stop()
    assert not azurite.running
    azurite.start()
    assert [m.content for m in queue.peek_messages()] == ["hello"]
    assert container.download_blob("a/b.txt").readall() == b"kept"


def test_a_port_in_use_is_a_clear_error(azurite: Azurite, azurite_executable: Path, tmp_path: Path) -> None:
    second = Azurite(tmp_path, azurite.blob_port, azurite.queue_port, executable=azurite_executable)
    with pytest.raises(AzuriteError, match=f"port {azurite.blob_port} .* already in use"):
        second.start()


def test_missing_azurite_says_what_to_install(tmp_path: Path) -> None:
    absent = Azurite(tmp_path)
    absent.executable = None
    with pytest.raises(AzuriteError, match="npm ci.*Node.js"):
        absent.start()


def test_connection_string_names_both_endpoints() -> None:
    text = connection_string(20000, 20001)
    assert "BlobEndpoint=http://127.0.0.1:20000/devstoreaccount1;" in text
    assert "QueueEndpoint=http://127.0.0.1:20001/devstoreaccount1;" in text
