// VideoPlayer: a typical video-player.tsx, reporting to vidpulse through the bundled
// tracker (GET /v1/tracker.js) instead of posting its own "watched_50_percent" event.
// The tracker records what was actually played, milestones (25/50/75/90 % of the
// seconds covered, once per session), completion, seeks and pauses; the ingest
// deduplicates milestones per viewer. Documentation only: this file is not built here.
"use client";

import { useEffect, useRef, type VideoHTMLAttributes } from "react";

type VidpulseTrackOptions = {
  videoId: string;
  viewerId?: string;
  courseId?: string;
  lessonId?: string;
  isPreview?: boolean;
};

type Vidpulse = {
  version: string;
  /** Starts tracking; the returned function ends the session and flushes. */
  track(video: HTMLVideoElement, options: VidpulseTrackOptions): () => void;
  flush(): Promise<void>;
};

declare global {
  interface Window {
    vidpulse?: Vidpulse;
  }
}

export type VideoPlayerProps = Omit<VideoHTMLAttributes<HTMLVideoElement>, "src"> & {
  /** Required: the id analytics are keyed on, 1-128 chars of [A-Za-z0-9._:-]. */
  videoId: string;
  src: string;
  /** The logged-in user's id; leave it out for anonymous viewers (the tracker keeps one). */
  viewerId?: string;
  courseId?: string;
  lessonId?: string;
  /** Inline previews (e.g. feed cards) are marked so analysts can tell them apart. */
  isPreview?: boolean;
};

export function VideoPlayer({
  videoId,
  src,
  viewerId,
  courseId,
  lessonId,
  isPreview,
  ...videoProps
}: VideoPlayerProps) {
  const ref = useRef<HTMLVideoElement>(null);

  useEffect(() => {
    const video = ref.current;
    if (!video) return;
    let stop: (() => void) | undefined;
    const start = () => {
      stop = window.vidpulse?.track(video, { videoId, viewerId, courseId, lessonId, isPreview });
    };
    // tracker.js is loaded with `defer`, so on a fast first render it may not be there
    // yet; it announces itself with a "vidpulse:ready" event on window.
    if (window.vidpulse) start();
    else window.addEventListener("vidpulse:ready", start, { once: true });
    return () => {
      window.removeEventListener("vidpulse:ready", start);
      stop?.(); // sends session_end and flushes; safe to call twice (React StrictMode)
    };
  }, [videoId, src, viewerId, courseId, lessonId, isPreview]);

  // A new video gets a new <video> element (key), so one element is one view.
  return (
    <video
      key={`${videoId}|${src}`}
      ref={ref}
      src={src}
      controls
      playsInline
      preload="metadata"
      {...videoProps}
    />
  );
}

export default VideoPlayer;
