"""Orchestration: the loop that makes running replicas match the deployments in the store.

A round (:mod:`.reconciler`) loads the deployments (:mod:`.store_edge`, :mod:`.snapshot`),
observes the dispatcher and providers read-only (:mod:`.observe`), decides each deployment's
actions with a pure function of its situation (:mod:`.decide`, using :mod:`.autoscale`,
:mod:`.placement` and :mod:`.removal` on the values of :mod:`.resources` and :mod:`.capacity`),
and changes what runs only through :class:`.apply.Apply` (launches built by :mod:`.launch`);
:mod:`.journal` records what was done and :mod:`.view` is what the API reads.
"""
