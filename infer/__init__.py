"""Generation: mapper + AudioLDM-2 -> audio and the video with its new soundtrack."""
