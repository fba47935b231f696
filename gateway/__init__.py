"""Cutover: the gateway server (app, auth, store, domain, GraphQL and WebSocket paths)."""
