"""Past one process: a load split over shards, each logging its windows, and the exact merge of those logs."""
