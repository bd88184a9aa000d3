// tmi.js (unmodified, from npm) against one standalone edge: two authenticated chatters, a broadcaster and a
// troll, over IRC-over-WebSocket. Prints one JSON object with what happened; the Python test asserts on it.
// Usage: node tmijs_chat.js  (env: TMI_PATH, EDGE_PORT, ROOM, STREAMER_TOKEN, TROLL_TOKEN, STAY_SECONDS)
'use strict';
const tmi = require(process.env.TMI_PATH);

const port = Number(process.env.EDGE_PORT);
const room = process.env.ROOM;
const channel = '#' + room;
const staySeconds = Number(process.env.STAY_SECONDS);
const out = { steps: [], errors: [], events: { streamer: {}, troll: {} } };

function client(name, token) {
	const c = new tmi.Client({
		options: { skipUpdatingEmotesets: true, skipMembership: false },
		connection: { server: '127.0.0.1', port, secure: false, reconnect: false },
		identity: { username: name, password: 'oauth:' + token },
		channels: [ channel ],
	});
	const ev = out.events[name];
	const count = (what) => { ev[what] = (ev[what] || 0) + 1; };
	for(const what of [ 'connected', 'disconnected', 'ping', 'pong', 'roomstate', 'join' ]) {
		c.on(what, () => count(what));
	}
	c.on('notice', (_chan, msgid) => { count('notice'); (ev.notices = ev.notices || []).push(msgid); });
	return c;
}

function waitFor(emitter, event, pred, ms, what) {
	return new Promise((resolve, reject) => {
		const timer = setTimeout(() => { emitter.removeListener(event, on); reject(new Error('timed out: ' + what)); }, ms);
		function on(...args) {
			if(pred(...args)) { clearTimeout(timer); emitter.removeListener(event, on); resolve(args); }
		}
		emitter.on(event, on);
	});
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
	const streamer = client('streamer', process.env.STREAMER_TOKEN);
	const troll = client('troll', process.env.TROLL_TOKEN);
	const roomstates = Promise.all([
		waitFor(streamer, 'roomstate', (chan) => chan === channel, 10000, 'streamer roomstate'),
		waitFor(troll, 'roomstate', (chan) => chan === channel, 10000, 'troll roomstate'),
	]);
	const started = Date.now();
	await streamer.connect();
	await troll.connect();
	const [ [ , state ] ] = await roomstates;
	out.steps.push('joined');
	out.roomstate = { slow: state.slow, 'subs-only': state['subs-only'], 'room-id': state['room-id'] };

	// the troll says something; the broadcaster sees it with its tags and deletes it
	const seen = waitFor(streamer, 'message', (chan, tags, text, self) => !self && text === 'hello from troll', 5000,
		'streamer sees the troll');
	await troll.say(channel, 'hello from troll');
	const [ , tags ] = await seen;
	out.message = { id: tags.id, user: tags.username, 'user-id': tags['user-id'], 'display-name': tags['display-name'] };
	const deleted = waitFor(troll, 'messagedeleted', (chan, user, text, t) => t['target-msg-id'] === tags.id, 5000,
		'troll sees the delete');
	await streamer.deletemessage(channel, tags.id);
	await deleted;
	out.steps.push('deleted');

	// a timeout: the troll is told, and its next message is refused
	const timedOut = waitFor(troll, 'timeout', (chan, user, reason, duration) => user === 'troll', 5000, 'timeout');
	await streamer.timeout(channel, 'troll', 30, 'calm down');
	const [ , , , duration ] = await timedOut;
	out.timeout_duration = Number(duration);
	const refused = waitFor(troll, 'notice', (chan, msgid) => msgid === 'msg_timedout', 5000, 'msg_timedout');
	await troll.say(channel, 'let me talk');
	await refused;
	out.steps.push('timed out');

	// a ban
	const banned = waitFor(streamer, 'ban', (chan, user) => user === 'troll', 5000, 'ban');
	await streamer.ban(channel, 'troll', 'enough');
	await banned;
	const refusedBan = waitFor(troll, 'notice', (chan, msgid) => msgid === 'msg_banned', 5000, 'msg_banned');
	await troll.say(channel, 'please');
	await refusedBan;
	out.steps.push('banned');

	// the broadcaster's own chat still flows to the troll (banned users still read)
	const heard = waitFor(troll, 'message', (chan, t, text) => text === 'bye', 5000, 'troll hears bye');
	await streamer.say(channel, 'bye');
	await heard;
	out.steps.push('said');

	// stay through tmi.js's own ping cycle (a PING every 60 s, fixed in the library) and the edge's PINGs
	const left = staySeconds * 1000 - (Date.now() - started);
	if(left > 0) { await sleep(left); }
	out.stayed_seconds = (Date.now() - started) / 1000;
	out.ready_state = { streamer: streamer.readyState(), troll: troll.readyState() };
	out.events_before_end = JSON.parse(JSON.stringify(out.events));
	out.latency = streamer.currentLatency;
	await streamer.disconnect();
	await troll.disconnect();
}

main().then(() => {
	process.stdout.write(JSON.stringify(out) + '\n');
	process.exit(0);
}).catch((err) => {
	out.errors.push(String(err && err.stack || err));
	process.stdout.write(JSON.stringify(out) + '\n');
	process.exit(1);
});
