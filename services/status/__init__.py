"""status: a video's status and progress; reads that never fail, progress that never goes back."""
