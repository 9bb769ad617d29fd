"""The agent channel across machines: TCP with TLS 1.3, the agent's certificate pinned by
fingerprint, the mutual proof of the agent key on top. A real AgentServer (no jail: a
LocalAgent whose session `s1` has a work dir) on 127.0.0.1, a real RemoteAgent.

Attack family: bugs in the service's own API (a control port reachable on the network:
eavesdropping, a man in the middle, a peer without the key)."""

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cogbox.agent import tls
from cogbox.agent.channel import AgentPlace
from cogbox.agent.process import open_channel
from cogbox.agent.remote import RemoteAgent
from cogbox.agent.server import AgentServer
from cogbox.agent.tls import AgentAddress
from cogbox.agent.wire import AgentAuthError
from cogbox.cli.agent import agent as agent_command
from cogbox.kernel.errors import KernelError
from tests.agent.conftest import OneHomeAgent

KEY = bytes(range(32))
WRONG = bytes(range(1, 33))
BODY = os.urandom(300_000)


@contextlib.asynccontextmanager
async def tls_agent(folder: Path, name: str = "agent") -> AsyncIterator[AgentServer]:
    """An agent served on 127.0.0.1 (a free port) with TLS, its address published in
    `folder/name`, as `cogbox agent --listen tcp://127.0.0.1:0` does."""
    place = AgentPlace(folder / name)
    agent = OneHomeAgent(workdirs=folder / "sessions")
    server = AgentServer(agent, KEY)
    runner, _ = await open_channel(server, place, ("127.0.0.1", 0))
    try:
        yield server
    finally:
        await runner.cleanup()
        await agent.close()


def test_a_manager_with_the_key_and_the_pin_is_served_calls_and_file_chunks(
    folder: Path,
) -> None:
    async def scenario() -> tuple[int, dict[str, object], bytes]:
        async with tls_agent(folder) as server:
            address = tls.published(AgentPlace(folder / "agent"))
            remote = RemoteAgent(address, KEY, shutdown_on_close=False)
            await remote.open()
            try:
                inventory = await remote.inventory()
                new = await remote.create_file("s1", "up.bin")
                await asyncio.to_thread(new.write, BODY)
                await asyncio.to_thread(new.commit)
                opened = await remote.open_stored_file("w1", "up.bin")
                back = await asyncio.to_thread(opened.read_at, 0, len(BODY))
                await asyncio.to_thread(opened.close)
            finally:
                await remote.close()
            return server.refused, inventory.sessions, back

    refused, sessions, back = asyncio.run(scenario())
    assert (refused, sessions, back) == (0, {}, BODY)


def test_a_plain_tcp_client_gets_no_http_answer(folder: Path) -> None:
    async def scenario() -> tuple[bytes, int]:
        async with tls_agent(folder) as server:
            address = tls.published(AgentPlace(folder / "agent"))
            reader, writer = await asyncio.open_connection(address.host, address.port)
            writer.write(b"GET /agent HTTP/1.1\r\nHost: agent\r\nUpgrade: websocket\r\n\r\n")
            await writer.drain()
            try:
                answer = await asyncio.wait_for(reader.read(4096), 5)
            except ConnectionResetError:
                answer = b""
            writer.close()
            return answer, server.calls

    answer, calls = asyncio.run(scenario())
    assert not answer.startswith(b"HTTP") and b"hello" not in answer and calls == 0


def test_a_tls_1_2_client_is_refused_at_the_handshake(folder: Path) -> None:
    async def scenario() -> None:
        async with tls_agent(folder):
            address = tls.published(AgentPlace(folder / "agent"))
            old = tls.client_context()
            old.minimum_version = ssl.TLSVersion.TLSv1_2
            old.maximum_version = ssl.TLSVersion.TLSv1_2
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await asyncio.open_connection(address.host, address.port, ssl=old)
            _, writer = await asyncio.open_connection(  # the same, with 1.3, gets through
                address.host, address.port, ssl=tls.client_context()
            )
            writer.close()

    asyncio.run(scenario())


def test_a_tls_client_with_the_wrong_key_is_refused_by_the_key_proof(folder: Path) -> None:
    async def scenario() -> tuple[int, int]:
        async with tls_agent(folder) as server:
            address = tls.published(AgentPlace(folder / "agent"))
            remote = RemoteAgent(address, WRONG, shutdown_on_close=False)
            with pytest.raises(AgentAuthError):
                await remote.open()
            await asyncio.sleep(0.1)  # the agent counts the refusal once it closed
            return server.refused, server.calls

    assert asyncio.run(scenario()) == (1, 0)


def test_a_manager_pinned_to_another_certificate_refuses_a_man_in_the_middle(
    folder: Path,
) -> None:
    """The man in the middle even holds the agent key: it serves with a certificate of its
    own at the address the manager dials, and is refused before the channel opens."""

    async def scenario() -> tuple[int, int]:
        async with tls_agent(folder, "real"), tls_agent(folder, "middle") as middle:
            real = tls.published(AgentPlace(folder / "real"))
            dialled = tls.published(AgentPlace(folder / "middle"))
            assert real.fingerprint != dialled.fingerprint
            remote = RemoteAgent(
                AgentAddress(dialled.host, dialled.port, real.fingerprint),
                KEY,
                shutdown_on_close=False,
            )
            try:
                with pytest.raises(AgentAuthError, match="not the pinned"):
                    await remote.open()
            finally:
                await remote.close()
            return middle.refused, middle.calls

    assert asyncio.run(scenario()) == (0, 0)


def test_the_published_folder_and_files_are_private(folder: Path) -> None:
    async def scenario() -> AgentAddress:
        async with tls_agent(folder):
            return tls.published(AgentPlace(folder / "agent"))

    address = asyncio.run(scenario())
    place = AgentPlace(folder / "agent")
    modes = [
        path.stat().st_mode & 0o777
        for path in (place.folder, place.address_file, place.tls_key_file)
    ]
    assert modes == [0o700, 0o600, 0o600]
    assert address.fingerprint == tls.certificate(place)  # the certificate is kept


def test_a_published_address_others_can_write_is_refused(folder: Path) -> None:
    place = AgentPlace(folder / "agent")
    place.make()
    tls.publish(place, "127.0.0.1", 1, "ab" * 32)
    place.address_file.chmod(0o622)
    with pytest.raises(AgentAuthError, match="not a private file"):
        tls.published(place)


def test_a_published_address_of_another_owner_is_refused(folder: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    place = AgentPlace(folder / "agent")
    place.make()
    tls.publish(place, "127.0.0.1", 1, "ab" * 32)
    os.chown(place.address_file, 65534, 65534)
    with pytest.raises(AgentAuthError, match="not a private file"):
        tls.published(place)


@pytest.mark.parametrize("planted", ["symlink", "fifo"])
def test_a_link_or_fifo_planted_as_the_address_is_refused_without_blocking(
    folder: Path, planted: str
) -> None:
    place = AgentPlace(folder / "agent")
    place.make()
    decoy = folder / "decoy.json"
    decoy.write_text('{"host": "10.9.9.9", "port": 1, "fingerprint": "%s"}' % ("cd" * 32))
    decoy.chmod(0o600)
    if planted == "symlink":
        place.address_file.symlink_to(decoy)
    else:
        os.mkfifo(place.address_file, 0o600)
    with pytest.raises(AgentAuthError, match="not a private file"):
        tls.published(place)


@pytest.mark.parametrize("text", ["127.0.0.1:80", "tcp://:80", "tcp://h:x", "tcp://h:70000"])
def test_a_listen_address_not_tcp_host_port_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        tls.parse_listen(text)


def test_a_wildcard_listen_is_published_as_this_machine(folder: Path) -> None:
    place = AgentPlace(folder / "agent")
    place.make()
    assert tls.parse_listen("tcp://[::]:7700") == ("::", 7700)
    assert tls.publish(place, "0.0.0.0", 7700, "ab" * 32).host == socket.gethostname()


def test_the_relay_route_is_reached_over_tls(folder: Path) -> None:
    """The relay WebSocket opens on the same pinned TLS session and proves the key; with no
    kernel behind it the agent answers with an error, not a refusal of the proof."""

    async def scenario() -> tuple[int, str]:
        async with tls_agent(folder) as server:
            remote = RemoteAgent(
                tls.published(AgentPlace(folder / "agent")), KEY, shutdown_on_close=False
            )
            await remote.open()
            try:
                with pytest.raises(KernelError) as failed:
                    await remote.open_relay("s9")
            finally:
                await remote.close()
            return server.refused, str(failed.value)

    assert asyncio.run(scenario()) == (0, "no kernel runs for session s9")


def test_the_agent_command_names_a_bad_listen_address() -> None:
    result = CliRunner().invoke(agent_command, ["--listen", "example.org:80"])
    assert result.exit_code == 2 and "tcp://HOST:PORT" in result.output
