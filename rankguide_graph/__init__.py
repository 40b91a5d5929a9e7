"""rankguide_graph: RankGuide collaboration between a small and a large reasoning model."""
