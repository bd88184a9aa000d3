"""The edge's chat servers with real clients: raw IRC over TCP and IRC over WebSocket (aiohttp), against an
in-process chat service on the LocalBus of a standalone edge."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import aiohttp
from prometheus_client import REGISTRY

from edged.chat.model import ChatLimits
from edged.protocols.irc.message import Message
from tests.integration.chat.edge_chat_harness import IrcClient, WsClient, chat_edge, eventually
from tests.unit.protocols.rtmp.certs import make_tls_files


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _privmsgs(lines: list[Message]) -> list[str]:
    return [m.params[1] for m in lines if m.command == "PRIVMSG"]


async def test_anonymous_reader_joins_and_gets_roomstate_and_cannot_send() -> None:
    async with chat_edge() as edge:
        c = await edge.irc_client("justinfan4711")
        got = await c.join("demo")
        commands = [m.command for m in got]
        assert commands == ["JOIN", "353", "366", "ROOMSTATE"]
        assert got[0].source.startswith("justinfan4711!") and got[0].params == ("#demo",)
        roomstate = got[-1]
        assert roomstate.tags["slow"] == "0" and roomstate.tags["subs-only"] == "0" and roomstate.tags["room-id"]
        await c.send("PRIVMSG #demo :hello")
        notice = (await c.until(lambda m: m.command == "NOTICE"))[-1]
        assert notice.tags["msg-id"] == "msg_requires_login"
        assert edge.service.members("demo") == 1


async def test_a_message_reaches_every_other_member_with_tmi_tags_and_the_sender_gets_userstate() -> None:
    async with chat_edge() as edge:
        alice = await edge.irc_client("alice", "subscriber")
        bob = await edge.irc_client("bob")
        viewer = await edge.ws_client("justinfan1")
        for c in (alice, bob):
            await c.join("demo")
        await viewer.send_frame("JOIN #demo")
        await viewer.until(lambda m: m.command == "ROOMSTATE")
        await alice.send("@client-nonce=n1 PRIVMSG #demo :hello there")
        for c in (bob, viewer):
            msg = (await c.until(lambda m: m.command == "PRIVMSG"))[-1]
            assert msg.params == ("#demo", "hello there")
            assert msg.source == "alice!alice@alice.tmi.twitch.tv"
            assert msg.tags["user-id"] == "u-alice" and msg.tags["display-name"] == "alice"
            assert msg.tags["subscriber"] == "1" and msg.tags["badges"] == "subscriber/0"
            assert msg.tags["client-nonce"] == "n1" and msg.tags["room-id"] and msg.tags["id"]
            assert int(msg.tags["tmi-sent-ts"]) > 0
        got = await alice.until(lambda m: m.command == "USERSTATE")
        assert not _privmsgs(got), "the sender does not get its own line back"


async def test_a_bad_token_or_one_for_another_nick_is_refused_and_closed() -> None:
    async with chat_edge() as edge:
        before = _metric("edged_chat_closed_total", reason="login_failed")
        c = await edge.irc_client()
        await c.send("PASS oauth:not-a-jwt", "NICK mallory")
        got = await c.closed()
        assert got and got[-1].command == "NOTICE" and got[-1].params[-1] == "Login authentication failed"
        c2 = await edge.irc_client()
        await c2.send(f"PASS oauth:{edge.keys.token('alice')}", "NICK bob")
        got = await c2.closed()
        assert got[-1].params[-1] == "Login authentication failed"
        assert _metric("edged_chat_closed_total", reason="login_failed") == before + 2


async def test_websocket_several_lines_per_frame_subprotocol_echoed_and_history_on_join() -> None:
    async with chat_edge() as edge:
        alice = await edge.irc_client("alice")
        await alice.join("demo")
        for i in range(3):
            await alice.send(f"PRIVMSG #demo :line {i}")
            await alice.until(lambda m: m.command == "USERSTATE")
        ws = await WsClient.connect(edge.ws_url)
        edge.clients.append(ws)
        assert ws.ws.protocol == "irc"
        token = edge.keys.token("carol")
        # one frame, four lines, the last without its CRLF
        await ws.send_frame(f"CAP REQ :twitch.tv/tags twitch.tv/commands\r\nPASS oauth:{token}\r\nNICK carol\r\n"
                            "JOIN #demo")
        got = await ws.until(lambda m: m.command == "PRIVMSG" and m.params[1] == "line 2")
        assert [m.command for m in got][:2] == ["CAP", "001"]
        assert _privmsgs(got) == ["line 0", "line 1", "line 2"]
        assert all(m.tags.get("historical") == "1" for m in got if m.command == "PRIVMSG")
        # an IRC client gets no history
        bob = await edge.irc_client("bob")
        assert not _privmsgs(await bob.join("demo"))


async def test_websocket_without_subprotocol_still_chats() -> None:
    async with chat_edge() as edge:
        ws = await WsClient.connect(edge.ws_url, protocols=())
        edge.clients.append(ws)
        assert ws.ws.protocol is None
        await ws.send_frame("NICK justinfan77")
        got = await ws.until(lambda m: m.command == "376")
        assert got[0].command == "001"


async def test_oversized_line_closes_only_that_connection() -> None:
    async with chat_edge() as edge:
        before = _metric("edged_chat_closed_total", reason="protocol")
        keep = await edge.irc_client("keeper")
        await keep.join("demo")
        bad = await edge.irc_client("bad")
        await bad.join("demo")
        await bad.send("PRIVMSG #demo :" + "x" * 3000)  # a chat text may go past 512 bytes, not this far
        await bad.closed()
        bad2 = await edge.irc_client("bad2")
        await bad2.send("PART #" + "x" * 600)  # any other command: 512 bytes
        await bad2.closed()
        ws_bad = await edge.ws_client("wsbad")
        await ws_bad.send_frame("@" + "a=" + "b" * 9000 + " PRIVMSG #demo :hi")
        await ws_bad.closed()
        assert _metric("edged_chat_closed_total", reason="protocol") == before + 3
        # the other connection is untouched and still chats
        other = await edge.irc_client("other")
        await other.join("demo")
        await other.send("PRIVMSG #demo :still here")
        assert _privmsgs(await keep.until(lambda m: m.command == "PRIVMSG")) == ["still here"]
        await keep.send("PING :x")
        assert (await keep.until(lambda m: m.command == "PONG"))[-1].params == ("x",)


async def test_invalid_utf8_closes_only_that_connection_tcp_and_websocket() -> None:
    async with chat_edge() as edge:
        keep = await edge.irc_client("keeper")
        await keep.join("demo")
        bad = await edge.irc_client("bad")
        await bad.join("demo")
        await bad.send_raw(b"PRIVMSG #demo :\xff\xfe bad\r\n")
        await bad.closed()
        ws = await edge.ws_client("wsbad")
        await ws.ws.send_bytes(b"PRIVMSG #demo :\xc3\x28")
        await ws.closed()
        await keep.send("PING :alive")
        assert (await keep.until(lambda m: m.command == "PONG"))[-1].params == ("alive",)
        assert edge.service.members("demo") == 1


async def test_the_21st_message_in_30_seconds_is_refused_with_msg_ratelimit() -> None:
    async with chat_edge() as edge:
        before = _metric("edged_chat_messages_total", direction="in", result="rate_limited")
        alice = await edge.irc_client("alice")
        bob = await edge.irc_client("bob")
        await alice.join("demo")
        await bob.join("demo")
        for i in range(21):
            await alice.send(f"PRIVMSG #demo :message {i}")
        notice = (await alice.until(lambda m: m.command == "NOTICE"))[-1]
        assert notice.tags["msg-id"] == "msg_ratelimit"
        got = await bob.until(lambda m: m.command == "PRIVMSG" and m.params[1] == "message 19")
        assert _privmsgs(got) == [f"message {i}" for i in range(20)]
        await alice.send("PRIVMSG #demo :/me after the refusal")  # still refused: the window has not passed
        assert (await alice.until(lambda m: m.command == "NOTICE"))[-1].tags["msg-id"] == "msg_ratelimit"
        assert _metric("edged_chat_messages_total", direction="in", result="rate_limited") == before + 2


async def test_slow_mode_refuses_the_second_message_and_spares_moderators() -> None:
    async with chat_edge() as edge:
        mod = await edge.irc_client("moddy", "moderator")
        alice = await edge.irc_client("alice")
        await mod.join("demo")
        await alice.join("demo")
        await mod.send("PRIVMSG #demo :/slow 30")
        assert (await mod.until(lambda m: m.command == "NOTICE"))[-1].tags["msg-id"] == "slow_on"
        state = (await alice.until(lambda m: m.command == "ROOMSTATE"))[-1]
        assert state.tags["slow"] == "30" and "subs-only" not in state.tags
        await alice.send("PRIVMSG #demo :first")
        await alice.send("PRIVMSG #demo :second")
        notice = (await alice.until(lambda m: m.command == "NOTICE"))[-1]
        assert notice.tags["msg-id"] == "msg_slowmode"
        await mod.send("PRIVMSG #demo :mods are exempt 1", "PRIVMSG #demo :mods are exempt 2")
        got = await alice.until(lambda m: m.command == "PRIVMSG" and m.params[1] == "mods are exempt 2")
        assert _privmsgs(got) == ["mods are exempt 1", "mods are exempt 2"]
        assert _privmsgs(await mod.until(lambda m: m.command == "PRIVMSG")) == ["first"]
        # a new joiner sees the mode in its ROOMSTATE
        bob = await edge.irc_client("bob")
        assert (await bob.join("demo"))[-1].tags["slow"] == "30"


async def test_ban_timeout_and_delete_reach_members_and_leave_history() -> None:
    async with chat_edge() as edge:
        mod = await edge.irc_client("moddy", "moderator")
        troll = await edge.irc_client("troll")
        await mod.join("demo")
        await troll.join("demo")
        await troll.send("PRIVMSG #demo :bad words")
        msg = (await mod.until(lambda m: m.command == "PRIVMSG"))[-1]
        await mod.send(f"PRIVMSG #demo :/delete {msg.tags['id']}")
        clear = (await troll.until(lambda m: m.command == "CLEARMSG"))[-1]
        assert clear.tags["target-msg-id"] == msg.tags["id"] and clear.tags["login"] == "troll"
        await mod.send("PRIVMSG #demo :/timeout troll 60 calm down")
        cc = (await troll.until(lambda m: m.command == "CLEARCHAT"))[-1]
        assert cc.params == ("#demo", "troll") and cc.tags["ban-duration"] == "60"
        await troll.send("PRIVMSG #demo :let me talk")
        assert (await troll.until(lambda m: m.command == "NOTICE"))[-1].tags["msg-id"] == "msg_timedout"
        await mod.send("PRIVMSG #demo :/ban troll")
        cc = (await troll.until(lambda m: m.command == "CLEARCHAT"))[-1]
        assert "ban-duration" not in cc.tags
        await troll.send("PRIVMSG #demo :please")
        assert (await troll.until(lambda m: m.command == "NOTICE"))[-1].tags["msg-id"] == "msg_banned"
        # a web client joining now gets none of troll's lines
        ws = await edge.ws_client("justinfan9")
        await ws.send_frame("JOIN #demo")
        got = await ws.until(lambda m: m.command == "ROOMSTATE")
        await mod.send("PRIVMSG #demo :marker")
        got += await ws.until(lambda m: m.command == "PRIVMSG" and m.params[1] == "marker")
        assert _privmsgs(got) == ["marker"]


async def test_server_ping_and_a_missed_pong_closes_the_connection() -> None:
    async with chat_edge(ping_interval=0.2, pong_timeout=0.5) as edge:
        before = _metric("edged_chat_closed_total", reason="pong_timeout")
        good = await edge.irc_client("good")
        silent = await edge.irc_client("silent")
        for _ in range(3):  # three PING/PONG cycles
            ping = (await good.until(lambda m: m.command == "PING"))[-1]
            await good.send(f"PONG :{ping.params[0]}")
        got = await silent.closed()
        assert any(m.command == "PING" for m in got)
        assert _metric("edged_chat_closed_total", reason="pong_timeout") == before + 1
        await good.send("PING :still")
        assert (await good.until(lambda m: m.command == "PONG"))[-1].params == ("still",)


async def test_no_login_within_the_login_timeout_is_closed() -> None:
    async with chat_edge(login_timeout=0.3) as edge:
        before = _metric("edged_chat_closed_total", reason="login_timeout")
        c = await edge.irc_client()
        await c.send("CAP REQ :twitch.tv/tags")
        await c.closed()
        assert _metric("edged_chat_closed_total", reason="login_timeout") == before + 1


async def test_the_connection_cap_refuses_the_next_one() -> None:
    async with chat_edge(max_connections=2) as edge:
        await edge.irc_client("justinfan1")
        await edge.ws_client("justinfan2")
        third = await edge.irc_client()
        assert await third.closed() == []
        async with aiohttp.ClientSession() as http:
            async with http.get(edge.ws_url, headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                                      "Sec-WebSocket-Version": "13",
                                                      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as resp:
                assert resp.status == 503
        assert edge.service.connections() == 2


async def test_join_and_part_of_others_only_in_rooms_up_to_big_room_members() -> None:
    async with chat_edge(big_room_members=2) as edge:
        a = await edge.irc_client("aaa")
        await a.join("demo")
        b = await edge.irc_client("bbb")
        names = await b.join("demo")
        assert [m.params[-1] for m in names if m.command == "353"] == ["bbb aaa"]
        assert (await a.until(lambda m: m.command == "JOIN"))[-1].source.startswith("bbb!")
        c = await edge.irc_client("ccc")  # the room has 2 members: no longer announced
        names = await c.join("demo")
        assert [m.params[-1] for m in names if m.command == "353"] == ["ccc"]
        await c.send("PART #demo")
        await c.until(lambda m: m.command == "PART")
        await b.send("PART #demo")  # 2 members again before b leaves: announced
        assert (await a.until(lambda m: m.command in ("PART", "JOIN")))[-1].command == "PART"
        await a.send("PING :end")
        got = await a.until(lambda m: m.command == "PONG")
        assert [m.command for m in got] == ["PONG"], "ccc's JOIN and PART were not sent"


async def test_a_reader_that_does_not_read_is_dropped_and_the_room_goes_on() -> None:
    limits = ChatLimits(messages_per_window=100_000, moderator_messages_per_window=100_000, duplicate_seconds=0)
    async with chat_edge(max_queue_bytes=16 * 1024, limits=limits, lines_per_second=100_000) as edge:
        before = _metric("edged_chat_closed_total", reason="slow_reader")
        dropped_before = _metric("edged_chat_messages_total", direction="out", result="dropped_slow")
        sender = await edge.irc_client("sender")
        reader = await edge.irc_client("reader")
        await sender.join("demo")
        await reader.join("demo")
        # a stuck reader: a tiny receive window and no reads
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window stays small
        stuck.connect(("127.0.0.1", edge.irc_port))
        stuck.sendall(b"CAP REQ :twitch.tv/tags\r\nNICK justinfan5\r\nJOIN #demo\r\n")
        try:
            await eventually(lambda: edge.service.members("demo") == 3, "the stuck reader's join")
            text = "y" * 450
            sent = 0
            # until the stuck reader is dropped (the kernel's buffers take a few MB first), in rounds that the
            # good reader reads to the end
            while edge.service.members("demo") == 3 and sent < 60_000:
                for _ in range(500):
                    await sender.send(f"PRIVMSG #demo :{sent} {text}")
                    sent += 1
                last = f"{sent - 1} "
                await reader.until(lambda m, last=last: m.command == "PRIVMSG" and m.params[1].startswith(last), 30)
            assert edge.service.members("demo") == 2, f"not dropped after {sent} messages"
            assert _metric("edged_chat_closed_total", reason="slow_reader") == before + 1
            assert _metric("edged_chat_messages_total", direction="out", result="dropped_slow") > dropped_before
            # the room goes on for the others
            await sender.send("PRIVMSG #demo :after the drop")
            assert _privmsgs(await reader.until(lambda m: m.command == "PRIVMSG"))[-1] == "after the drop"
        finally:
            stuck.close()


async def test_stop_sends_reconnect_to_every_client_first() -> None:
    async with chat_edge() as edge:
        tcp = await edge.irc_client("alice")
        ws = await edge.ws_client("justinfan3")
        plain = await edge.irc_client("bob", caps="")  # without twitch.tv/commands: no RECONNECT, just closed
        await edge.service.stop()
        for c in (tcp, ws):
            got = await c.closed()
            assert [m.command for m in got if m.command != "GLOBALUSERSTATE"] == ["RECONNECT"]
        assert await plain.closed() == []


async def test_reconnect_all_for_a_drain_tells_clients_then_closes() -> None:
    async with chat_edge() as edge:
        c = await edge.irc_client("alice")
        assert edge.service.reconnect_all(grace=0.1) == 1
        got = await c.closed()
        assert [m.command for m in got if m.command != "GLOBALUSERSTATE"] == ["RECONNECT"]


async def test_metrics_count_connections_and_deliveries() -> None:
    async with chat_edge() as edge:
        base_tcp = _metric("edged_chat_connections", transport="irc")
        base_ws = _metric("edged_chat_connections", transport="ws")
        delivered = _metric("edged_chat_messages_total", direction="out", result="delivered")
        accepted = _metric("edged_chat_messages_total", direction="in", result="delivered")
        deliveries = _metric("edged_chat_delivery_seconds_count")
        a = await edge.irc_client("alice")
        b = await edge.irc_client("bob")
        w = await edge.ws_client("justinfan8")
        assert _metric("edged_chat_connections", transport="irc") == base_tcp + 2
        assert _metric("edged_chat_connections", transport="ws") == base_ws + 1
        await a.join("demo")
        await b.join("demo")
        await w.send_frame("JOIN #demo")
        await w.until(lambda m: m.command == "ROOMSTATE")
        await a.send("PRIVMSG #demo :count me")
        await b.until(lambda m: m.command == "PRIVMSG")
        await w.until(lambda m: m.command == "PRIVMSG")
        assert _metric("edged_chat_messages_total", direction="out", result="delivered") == delivered + 2
        assert _metric("edged_chat_messages_total", direction="in", result="delivered") == accepted + 1
        assert _metric("edged_chat_delivery_seconds_count") == deliveries + 1
        assert edge.service.health()["by_transport"] == {"irc": 2, "ws": 1}
        a.close()
        await eventually(lambda: _metric("edged_chat_connections", transport="irc") == base_tcp + 1, "the close")


async def test_a_flood_of_lines_closes_the_connection() -> None:
    async with chat_edge(lines_per_second=5.0) as edge:
        before = _metric("edged_chat_closed_total", reason="flood")
        c = await edge.irc_client("justinfan6")
        await c.send_raw(b"PING :x\r\n" * 40)
        got = await c.closed()
        assert len([m for m in got if m.command == "PONG"]) < 40
        assert _metric("edged_chat_closed_total", reason="flood") == before + 1


async def test_irc_over_tls(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    async with chat_edge(tls_cert_file=str(tls.cert), tls_key_file=str(tls.key), irc_tls_listen="127.0.0.1:0") as edge:
        assert edge.irc.tls_port
        ctx = ssl.create_default_context(cafile=str(tls.ca))
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.irc.tls_port, ssl=ctx)
        c = IrcClient(reader, writer)
        edge.clients.append(c)
        got = await c.login("justinfan42")
        assert got[-1].command == "376"
        assert edge.service.health()["by_transport"] == {"ircs": 1}
