"""rankguide_graph: RankGuide collaborative reasoning between a small and a large reasoning model."""
