"""The fleet domain: host registration and status, inventories and their diffs, fleet questions."""
