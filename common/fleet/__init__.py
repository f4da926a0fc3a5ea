"""The fleet's domain in one place: the sizes and their queues (`sizes`), the nodes and their
GPU ledgers (`nodes`), packing and reservations (`packing`), the index of waiting runs
(`waitlist`), the fleet-wide reservation plan (`plan`), and why a run waits (`waiting`)."""
