"""The durable event spool (``store``) and the task that ships it upstream (``shipper``)."""
