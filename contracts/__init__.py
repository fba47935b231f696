"""The Cutover wire contract as code (PROTOCOL.md): frames, events, actions, errors."""
