"""IRC with Twitch's TMI dialect, sans-IO: ``message`` (one line), ``framing`` (a byte stream into lines),
``tmi`` (every line the server sends) and ``session`` (one client connection's server-side state machine)."""
