"""Saga orchestration for Django on Celery.

Declare a saga with :class:`sagas.definition.SagaDefinition`, register it with
:func:`sagas.registry.register`, and start it with :func:`sagas.engine.saga_start`
inside your own ``transaction.atomic()``.
"""
