"""The InfiniteTalk pipeline's core: models, pricing, WaveSpeed client, data access and the steps."""
