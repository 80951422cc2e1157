"""One module per benchmark: item snapshot, generation options, judge jobs and aggregation."""
