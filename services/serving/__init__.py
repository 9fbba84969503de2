"""serving: predictions for every feature event and for request/reply calls, with live swaps."""
