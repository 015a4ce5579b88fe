"""A warehouse service: a saga participant in its own process and database.

It imports nothing from the orchestrator's Django project. It keeps its own
stock in its own SQLite file (``WAREHOUSE_DB``), takes commands as Celery tasks
on the ``warehouse`` queue and answers with the task the command names
(``reply_task``, on the orchestrator's queue).
"""
