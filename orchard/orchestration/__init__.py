"""Orchestration: the loop that makes running replicas match the deployments in the store.

A round (:mod:`.reconciler`) loads the deployments (:mod:`.store_edge`, :mod:`.snapshot`, which
only reads), observes the dispatcher and providers into the round's world, read only and the
only intake (:mod:`.observe`, :mod:`.world`), decides the whole round's actions with one pure
function of that world (:mod:`.decide`, using :mod:`.autoscale`, :mod:`.placement`,
:mod:`.removal` and :mod:`.capacity` on the values of :mod:`.resources`; the actions are in
:mod:`.actions`), and changes what runs only through :class:`.apply.Apply` (launches built by
:mod:`.launch`), whose outcome the next round's world carries; :mod:`.journal` records what was
done and :mod:`.view` is what the API reads.
"""
