"""Open-answer knowledge probes: TriviaQA and WebQuestions answered by greedy generation."""
