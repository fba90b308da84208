"""The frozen encoders' names and sizes that configuration defaults need, without importing torch.

The encoder stages (pipeline/cavp.py, ...) take their ``Params`` defaults from here, so that validating a
configuration (v2a/schema.py imports every stage module) does not import the networks; the network modules
(frozen/cavp.py, ...) take the same constants from here under their own names (``frozen.cavp.HUB_FILENAME``, ...).
Plain constants only: this module imports nothing.
"""

# Frames per clip, audio span, TimeChat's windows: the clip grid (frozen/grid.py), derived from stages.frames.params.

# CAVP (Diff-Foley), frozen/cavp.py
CAVP_HUB_FILENAME = "diff_foley_ckpt/cavp_epoch66.ckpt"  # the file inside the hub repo (SimianLuo/Diff-Foley)
CAVP_IMAGE_SIZE = 224  # the frame side the released model was trained on (Diff-Foley: straight resize to 224)
CAVP_CHUNK_FRAMES = 40  # frames per encoder call: the reference encodes 40-frame chunks independently

# TimeChat's visual path, frozen/timechat.py
TIMECHAT_IMAGE_SIZE = 224  # EVA ViT-g/14: 16 x 16 patches + CLS = its 257 position embeddings
TIMECHAT_FRAME_POSITIONS = 96  # rows of video_frame_position_embedding: the most frames a clip can place in time
TIMECHAT_FRAME_BATCH = 40  # frames per ViT call (memory, not the clip's frame count)

# AudioMAE (inside AudioLDM-2's checkpoint), frozen/audiomae.py
AUDIOMAE_HUB_REPO = "haoheliu/audioldm2-full"
AUDIOMAE_HUB_FILENAME = "audioldm2-full.pth"
AUDIOMAE_FULL_PREFIX = "cond_stage_models.0.cond_stage_models.2.audiomae.model."  # key prefix in its state_dict
AUDIOMAE_CLIP_SAMPLES = 160_000  # the audio it reads: AudioLDM-2's 10 s clips at 16 kHz (padded to 10.24 s inside)

# CLIP image encoder (V2A-Mapper's source), frozen/clip.py
CLIP_DEFAULT_CHECKPOINT = "openai/clip-vit-large-patch14"

# CLAP audio encoder (V2A-Mapper's target), frozen/clap.py
CLAP_DEFAULT_CHECKPOINT = "laion/clap-htsat-unfused"

# AudioLDM-2's samplers and classifier-free-guidance negatives (frozen/audioldm2.py, infer/audioldm2.py)
SCHEDULERS = ("ddim", "dpm++")  # set_scheduler: DDIM (paper) | DPM-Solver++ 2M
NEGATIVE_GENERATED = ("zeros", "prompt")  # the AudioMAE-stream negative for classifier-free guidance
DEFAULT_NEGATIVE_PROMPT = "low quality, average quality"
