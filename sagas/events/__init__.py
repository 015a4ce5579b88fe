"""Choreography: events through a transactional outbox, inboxes and a tracker.

``sagas.events`` is its own Django app (label ``saga_events``): add it to
``INSTALLED_APPS`` next to ``sagas``. Publishing is ``sagas.events.outbox.publish``;
consuming is ``sagas.events.consumers.handler``; flows are declared with
``sagas.events.flows.register_flow``.
"""
