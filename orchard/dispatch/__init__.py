"""The dispatcher: prediction calls in, a replica chosen for each, outputs back.

``targets`` resolves a call's runner selector to a target (a database read), ``choose`` picks a
replica (pure), ``sessions`` tracks each connected replica and the items sent to it, and
``dispatcher`` holds, queues, cancels and retries calls (see its docstring).
"""
