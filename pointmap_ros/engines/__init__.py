"""Inference backends behind one interface (:class:`pointmap_ros.engines.base.Engine`)."""
