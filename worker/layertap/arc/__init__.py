"""ARC-AGI data: readers, grid encoders, prompts, augmentations, segment labels.

`layertap.arc.dataset` turns a DatasetSpec into `Sample`s for the runner;
`layertap transform` (`layertap.arc.transform_cli`) rewrites BARC / Hugging Face
ARC-style data as ARC-AGI JSON.
"""
