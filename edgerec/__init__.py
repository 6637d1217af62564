"""edgerec: edge-deployed personalization runtime (command line and demo; the services live in edge_node and
origin_sync)."""
